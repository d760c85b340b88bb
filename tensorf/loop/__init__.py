"""The training loop as small parts, each asked what it needs at a step: the event schedule
(`schedule`), the time budget and its plan (`budget`), the buffer sizes (`buffers`), the
metrics read a call late (`readings`), the logging sinks and the viewer hand-off
(`monitor`), the start of a run (`start`), the run directory (`rundir`), signals, and the
loop itself (`training_loop`), which reads top to bottom."""
