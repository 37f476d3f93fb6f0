"""scaledyolo.eval"""
