"""Runnable example jobs and the synthetic data they read."""
