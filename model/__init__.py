"""lymph.model"""
