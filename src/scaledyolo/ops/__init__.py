"""scaledyolo.ops"""
