"""TAID distillation into compact students made of the teacher's own blocks (``trlm distill train``).

The library is in :mod:`trlm.distill.run` (``DistillSpec``, ``distill``), the losses in
:mod:`trlm.distill.losses` and the schedule in :mod:`trlm.distill.schedule`."""
