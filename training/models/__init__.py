"""training/models"""
