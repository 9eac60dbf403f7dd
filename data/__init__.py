"""lymph.data"""
