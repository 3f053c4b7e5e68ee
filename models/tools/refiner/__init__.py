"""The learned refiner pack's training and export, as a package of small modules driven by one TrainConfig:

    constants   the fixed sizes, steps and loss region weights, the batch type
    errors      RefinerError and its stable codes
    config      TrainConfig, the command line that builds and validates it
    packed      the dataset cache on disk and its packed (video-coded) form; `python3 -m refiner.packed pack`
    geometry    rotation matrices and box masks
    augment     flip / colour / roll augmentation of batches, the encoder's input disturbed, validation motions
    data        the samples in memory, split by clip, read as batches
    networks    the encoder, the refiner step, InDI sampling
    losses      named loss terms summed by a regime's spec (new terms plug in here)
    loops       the teacher, student and fine-tune regimes and their shared loop with checkpoints
    validate    the validation scores and the default steps
    weights     .npz weights in and out, an exported pack's weights read back from ONNX
    export      the ONNX graphs and manifest.json
    model_card  MODEL_CARD.md from training.json
    pipeline    one run, as the config says
    bench       one step of a pack in onnxruntime, per execution provider; `python3 -m refiner.bench`

Run from models/tools (or with it on PYTHONPATH), with Debian's /usr/bin/python3 (PyTorch 1.13, CPU; a lent GPU with
--device cuda): `python3 -m refiner --cache DIR --clips A,B --out PACK [...]`; `npm run train -- --data
../shared/train` builds the dataset cache first (server/learned/dataset.ts) and calls it.

The method (see models/refiner/MODEL_CARD.md, written by model_card.py):
- Expression encoder E: the driving face, FFHQ-aligned, grey 64x64, augmented against identity leakage (scale,
  rotation, shift, blur, brightness/contrast, noise) -> a 32-number code. It only enters the refiner through FiLM
  (per-channel scale and shift), never as a spatial map, so the driver's face shape cannot be copied.
- Refiner F (InDI, Delbracio and Milanfar 2023): the warp output y is the degraded guess, the true frame x the target.
  Training input x_t = (1 - t) x + t y (t in (0, 1], t = 1 half of the time: the first and, for k = 1, only step);
  F(x_t, t | y, source, paste mask, code) predicts x (as a residual over x_t) with a weighted L1 loss (mouth box x4,
  eye boxes x3, outside the paste mask x0). Sampling from t = 1 in k steps: x <- (dt/t) F(x, t) + (1 - dt/t) x.
  The teacher samples with k = 8 steps.
- Student: a copy of F fine-tuned so that its k-step sample (k drawn from 1, 2, 4 per batch) matches the teacher's
  8-step sample (plus a quarter weight on the truth); the encoder is frozen then.
"""
