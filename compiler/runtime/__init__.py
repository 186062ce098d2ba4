"""What ships to deploy hosts. loader.py is self-contained and copied into every bundle."""
