"""07-inference"""
