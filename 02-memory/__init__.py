"""02-memory"""
