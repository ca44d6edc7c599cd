"""Loupe's engine: data, augmentation and (later) training in plain PyTorch, PIL and pandas.

Never imports streamlit: everything the app does, a script can do by importing `engine`.
"""
from engine.errors import UserError

__all__ = ["UserError"]
