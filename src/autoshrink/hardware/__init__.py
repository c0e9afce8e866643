"""Hardware cost: measured latency (:mod:`.latency`), a network cut into measurable blocks
(:mod:`.blocks`), latency lookup tables that predict by sum (:mod:`.table`), and HW-NAS-Bench's
per-device costs of NAS-Bench-201 cells (:mod:`.hwnasbench`)."""
