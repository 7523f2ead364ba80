"""03-tokenization"""
