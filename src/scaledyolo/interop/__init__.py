"""scaledyolo.interop"""
