"""scaledyolo.data"""
