"""05-training"""
