"""06-evaluation"""
