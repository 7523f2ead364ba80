"""04-model"""
