"""``check_...`` helpers for the exercises at the end of each notebook.

Each returns a :class:`~llmimg.course.exercises.feedback.Feedback` (right, or not yet and
why); none raises on a wrong answer. One module per notebook.
"""

from llmimg.course.exercises.clip import *  # noqa: F403
from llmimg.course.exercises.clip import __all__ as _clip_all
from llmimg.course.exercises.feedback import Feedback
from llmimg.course.exercises.generator import *  # noqa: F403
from llmimg.course.exercises.generator import __all__ as _generator_all
from llmimg.course.exercises.joint import *  # noqa: F403
from llmimg.course.exercises.joint import __all__ as _joint_all
from llmimg.course.exercises.llm import *  # noqa: F403
from llmimg.course.exercises.llm import __all__ as _llm_all
from llmimg.course.exercises.math import *  # noqa: F403
from llmimg.course.exercises.math import __all__ as _math_all
from llmimg.course.exercises.pipeline import *  # noqa: F403
from llmimg.course.exercises.pipeline import __all__ as _pipeline_all
from llmimg.course.exercises.pretrained import *  # noqa: F403
from llmimg.course.exercises.pretrained import __all__ as _pretrained_all
from llmimg.course.exercises.shapes_world import *  # noqa: F403
from llmimg.course.exercises.shapes_world import __all__ as _data_all
from llmimg.course.exercises.speed import *  # noqa: F403
from llmimg.course.exercises.speed import __all__ as _speed_all
from llmimg.course.exercises.welcome import *  # noqa: F403
from llmimg.course.exercises.welcome import __all__ as _welcome_all

__all__ = ["Feedback", *_welcome_all, *_math_all, *_data_all, *_clip_all, *_llm_all, *_generator_all, *_pipeline_all,
           *_joint_all, *_speed_all, *_pretrained_all]
