"""The course machinery: ``reproduce`` (runs the notebooks), ``reference`` (the headline numbers
a run records and the reference they are checked against), ``exercises`` (the ``check_...``
helpers), ``theory`` (notebook 01's toy problems) and ``demo`` (the widget demo). It needs the
``course`` extra (Jupyter, papermill, ipywidgets)."""
