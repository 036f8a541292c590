"""``check_...`` helpers for the exercises at the end of each notebook.

Each returns a :class:`~llmimg.exercises.feedback.Feedback` (right, or not yet and
why); none raises on a wrong answer. One module per notebook.
"""

from llmimg.exercises.feedback import Feedback
from llmimg.exercises.math import *  # noqa: F403
from llmimg.exercises.math import __all__ as _math_all
from llmimg.exercises.shapes_world import *  # noqa: F403
from llmimg.exercises.shapes_world import __all__ as _data_all
from llmimg.exercises.welcome import *  # noqa: F403
from llmimg.exercises.welcome import __all__ as _welcome_all

__all__ = ["Feedback", *_welcome_all, *_math_all, *_data_all]
