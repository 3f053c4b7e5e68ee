"""The refiner's fixed vocabulary, shared by every module of the package: sizes of the graphs' inputs and outputs that
the engine (server/avatar/engines/default/refiner.ts) also assumes, the sampling steps, the loss region weights and the
batch type. Imports nothing of the package."""
from typing import Dict, Final, Tuple

import torch

CODE: Final = 32  # numbers in the expression code
DRIVE: Final = 64  # side of the grey driving crop the encoder reads
TEACHER_STEPS: Final = 8  # the teacher's sampling steps (the student's target)
STUDENT_STEPS: Final[Tuple[int, ...]] = (1, 2, 4)  # the k the student is distilled for (and validated at)
MOUTH_W: Final = 4.0  # loss weight in the mouth box
EYE_W: Final = 3.0  # loss weight in the eye boxes

# A batch of samples, 0..1 floats (boxes int64): warp, truth, drive, src, mask, boxes and, from a version 2 cache,
# src_al (the aligned source).
Batch = Dict[str, torch.Tensor]
