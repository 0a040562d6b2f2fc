"""TAID distillation into compact students (issue: TAID distillation). Empty until that issue lands."""
