"""The one exception type for mistakes a user can make; pages show its message with st.error."""


class UserError(Exception):
    """An error caused by user input, with a message written for that user (no traceback needed)."""
