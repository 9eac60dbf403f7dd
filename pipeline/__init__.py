"""lymph.pipeline"""
