"""Running the suite: ``catalog`` (notebooks and their metadata), ``runner`` (papermill, markers,
resume), ``claims`` (the scoreboard), ``report`` (report.md / report.html), ``cli`` (``xnn``)."""
