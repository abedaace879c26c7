//! # lenet: LeNet-5 and the seeds' other networks on Fashion-MNIST with any backend
//!
//! Trains the seeds' LeNet-5 (conv 1→6 5x5 pad 2, pool 2x2/2, conv 6→16 5x5,
//! pool 2x2/2, linear 400→120→84→10) by default, and with `--model` LeNet-5
//! with batch norm (`lenet5-bn`), MXNet's LeNet (`mxnet-lenet`) or the
//! SimpleConvNet (`simplecnn`), optionally with `--dropout P` before every
//! dense layer ([`model::Model`]), with any backend of the workspace:
//! `naive` (the reference loops), `im2col` (im2col + sgemm, rayon threads) or
//! `opencl`. Every forward and backward step and every optimiser update is a
//! backend op; parameters, gradients and optimiser state stay on the device,
//! and per step only the batch goes up and the loss and logits come down.
//!
//! ## Quick start
//!
//! ```text
//! make lenet                                   # setup, then train on OpenCL (PoCL here); outputs in target/lenet/
//! cargo run --release -p lenet -- --backend im2col --threads 2 --epochs 10 \
//!     --metrics m.json --plot curves.svg --filters filters.svg --save lenet.safetensors
//! cargo run --release -p lenet -- eval --load lenet.safetensors
//! cargo run --release -p lenet -- --load lenet.safetensors --epochs 5     # resume: epochs 11..15
//! # the seed's recipe:
//! cargo run --release -p lenet -- --activation sigmoid --pool avg --optimizer sgd --lr 0.9
//! ```
//!
//! `lenet train` is the default command; `lenet eval --load FILE` reports
//! test loss and accuracy of a checkpoint. After each epoch one line:
//!
//! ```text
//! epoch 3  loss 0.347  train acc 0.872  test acc 0.852  37512.4 examples/s  (im2col, 2 threads)
//! ```
//!
//! (loss and train accuracy averaged over the epoch's batches as d2l does;
//! examples/s over the epoch's training loop, evaluation excluded; printed
//! after that epoch's checkpoint is saved). A
//! progress bar runs while an epoch trains when stderr is a terminal.
//!
//! ## Flags
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--backend naive\|im2col\|opencl` | im2col | what runs the ops |
//! | `--device SEL` | `KERNELS_OPENCL_DEVICE`, else a GPU, else any | OpenCL device: `P:D` indices or a name substring |
//! | `--threads N` | `RAYON_NUM_THREADS` or all cores | im2col threads, at most 4 per core |
//! | `--force-threads` | off | allow `--threads` above 4 per core (up to 1024), for experiments |
//! | `--epochs N` | 10 | epochs to run, 1 to 100000 (numbered on from a loaded checkpoint) |
//! | `--batch-size N` | 256 | the last batch of an epoch may be smaller |
//! | `--seed N` | 0 | initial weights and every epoch's shuffle |
//! | `--limit N`, `--test-limit N` | all | train / evaluate on the first N images |
//! | `--data DIR` | `FASHION_MNIST_DIR`, else `/usr/share/datasets/fashion-mnist` | the four IDX files, raw or `.gz` |
//! | `--model lenet5\|lenet5-bn\|mxnet-lenet\|simplecnn` | lenet5 (or the checkpoint's) | the network ([`model::Model`]) |
//! | `--dropout P` | none (or the checkpoint's) | dropout with probability P in [0, 1) before every dense layer; evaluation skips it |
//! | `--activation relu\|sigmoid`, `--pool max\|avg` | relu, max (or the checkpoint's) | the variant |
//! | `--optimizer sgd\|momentum\|nesterov\|adagrad\|rmsprop\|adam` | adam (or the checkpoint's) | update rule |
//! | `--lr X` | sgd 0.1; momentum, nesterov, adagrad 0.01; rmsprop, adam 0.001 | learning rate |
//! | `--momentum`, `--alpha`, `--beta1`, `--beta2`, `--eps`, `--weight-decay` | 0.9, 0.99, 0.9, 0.999, 1e-8 (adagrad 1e-10), 0 | hyper-parameters (PyTorch's meaning) |
//! | `--save FILE` | | checkpoint after every epoch (may be the `--load` file: resuming in place) |
//! | `--load FILE` | | resume training from, or evaluate, a checkpoint |
//! | `--metrics FILE.json` | | config, backend, device, threads and per epoch loss, accuracies, examples/s, seconds |
//! | `--plot FILE.svg` | | loss and accuracy curves (d2l's animator, as a file) |
//! | `--filters FILE.svg` | | conv1's filters (6, 20 or 30) before and after training |
//! | `--list-devices` | | print the OpenCL devices with their limits and `--device` index, and exit |
//! | `--profile` | off | time every op (synchronised) and print where the time goes |
//!
//! Environment: `FASHION_MNIST_DIR` (data), `KERNELS_OPENCL_DEVICE` (OpenCL
//! device), `RAYON_NUM_THREADS` (im2col threads without `--threads`).
//!
//! Before the first step every count is checked (`--epochs 0`,
//! `--test-limit 0` and an empty test set are refused), and so is every
//! output: its directory must exist and take new files, it must not be a
//! directory, no two outputs may name the same file (compared by the
//! canonical path of their directory and their name), and none may be a data
//! file or the `--load` checkpoint (only `--save` may replace that one).
//! A path that exists but is the wrong kind of thing (a file given to
//! `--data`, a data file that is a directory, a symlink loop) is reported
//! as what it is. If an output still fails after training, the others are
//! written and the error says where the checkpoint is. When stdout is
//! closed (`lenet ... | head -3`), training stops quietly after saving the
//! epoch it could not report, with a note on stderr.
//!
//! ## Data
//!
//! [`data`] reads IDX files, gzip-compressed or raw (the gzip magic decides),
//! named `train-images-idx3-ubyte` or MNIST's `train-images.idx3-ubyte`,
//! and checks the magic numbers, the dimensions (28x28 images), that the
//! payload is exactly as long as the dimensions say, that image and label
//! counts match and that labels are below 10; any violation is an error naming
//! the file. MNIST in the same four-file layout works with `--data`. A missing
//! directory gives an error listing every path tried and how to get the data
//! (`make setup`, the Debian package `dataset-fashion-mnist`, or `--data`).
//! Pixels are scaled to [0, 1]; each epoch's order is a shuffle seeded by
//! `--seed` and the epoch number, so a resumed run sees the same orders.
//!
//! ## Model, optimisers, divergence
//!
//! [`model::LeNet`] is generic over `B: Backend`; weights start
//! Xavier-uniform (PyTorch's fans, scaled by the gain of the activation
//! that follows: √2 for ReLU) from the seed, biases at zero. conv1's
//! backward asks for dw and db only. The optimisers are kernels-core's
//! [`kernels_core::Optimizer`] rules run by the backend. A loss that becomes
//! NaN or infinite (each step's, and the test loss after an epoch's last
//! step) stops training with an error and exit code 1 that says what the
//! checkpoint file holds; a save never writes NaN or infinite parameters or
//! optimiser state, and `eval` and `--load` refuse a checkpoint holding any.
//!
//! ## Checkpoints (safetensors, PyTorch-compatible)
//!
//! [`checkpoint`] writes F32 tensors under PyTorch's names and shapes:
//! `conv1.weight [6, 1, 5, 5]`, `conv1.bias [6]`, `conv2.weight [16, 6, 5, 5]`,
//! `conv2.bias [16]`, `fc1.weight [120, 400]`, `fc1.bias [120]`,
//! `fc2.weight [84, 120]`, `fc2.bias [84]`, `fc3.weight [10, 84]`,
//! `fc3.bias [10]`; the optimiser buffers as `optim.<param>.<slot>`; epoch,
//! step, seed, activation, pool, optimiser and hyper-parameters in
//! `__metadata__`. Saves go to a uniquely named temporary file beside
//! `FILE` (created exclusively: a symlink there is never followed), are
//! synced, renamed over `FILE`, and the directory is synced. Loading refuses missing, extra or misshapen tensors with an error
//! naming them; `--load` with a conflicting `--activation`, `--pool` or
//! `--optimizer` is refused too (a different `--lr` is taken).
//!
//! In PyTorch (inputs [N, 1, 28, 28] scaled to [0, 1], no normalisation):
//!
//! ```python
//! import torch
//! from torch import nn
//! from safetensors.torch import load_file
//!
//! class LeNet(nn.Module):
//!     def __init__(self, act=nn.ReLU, pool=nn.MaxPool2d):  # or nn.Sigmoid, nn.AvgPool2d
//!         super().__init__()
//!         self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
//!         self.conv2 = nn.Conv2d(6, 16, 5)
//!         self.fc1 = nn.Linear(16 * 5 * 5, 120)
//!         self.fc2 = nn.Linear(120, 84)
//!         self.fc3 = nn.Linear(84, 10)
//!         self.act, self.pool = act(), pool(2, 2)
//!
//!     def forward(self, x):
//!         x = self.pool(self.act(self.conv1(x)))
//!         x = self.pool(self.act(self.conv2(x)))
//!         x = torch.flatten(x, 1)
//!         x = self.act(self.fc1(x))
//!         x = self.act(self.fc2(x))
//!         return self.fc3(x)
//!
//! model = LeNet()
//! missing, unexpected = model.load_state_dict(load_file("lenet.safetensors"), strict=False)
//! assert not missing  # `unexpected` lists the optim.* buffers
//! ```
//!
//! ## Figures (measured here: 2-core AMD EPYC, shared and noisy)
//!
//! `docs/` holds the curves, filters and metrics of the two 10-epoch
//! recipes, batch 256, im2col on 2 threads:
//!
//! - relu + max pooling + Adam lr 1e-3 (`--epochs 10`, the defaults):
//!   test accuracy 0.881 (`docs/relu-max-adam.svg`,
//!   `docs/relu-max-adam-filters.svg`); over seeds 0-4, 0.881, 0.884, 0.893,
//!   0.884, 0.891 (mean 0.887, PyTorch 0.889).
//! - the seed's sigmoid + avg pooling + SGD lr 0.9 (`--activation sigmoid
//!   --pool avg --optimizer sgd --lr 0.9`): test accuracy 0.811
//!   (`docs/sigmoid-avg-sgd.svg`).
//!
//! Throughput depends on the backends' state and the machine's load; see
//! the crate's closing report for the figures and the commands.
//!
//! ## Where the time goes
//!
//! `--profile` wraps the backend in [`profile::Timed`], which times each op
//! (synchronising after it) keyed by op and layer shape, and prints a table
//! with each op's share and the host's remainder (batch gathering, argmax,
//! bookkeeping). The `--metrics` file then carries the table too.
//!
//! ## Layout
//!
//! - `data.rs`: IDX reader, [`data::Dataset`], data directory lookup, epoch shuffles
//! - `model.rs`: [`model::LeNet`], its forward and backward through the backend
//! - `train.rs`: [`train::Trainer`] (steps, epochs, fit), [`train::evaluate`]
//! - `checkpoint.rs`: safetensors save (atomic) and validated load
//! - `plot.rs`: the SVG curves and filters; `report.rs`: epoch lines, progress bar, metrics JSON, profile table
//! - `profile.rs`: the timing backend wrapper; `cli.rs`: flags, their checks and the one backend `match`; `error.rs`
//! - `output.rs`: `say!`/`note!`, printing that survives a closed stdout
//!
//! Tests (`cargo test -p lenet`): `tests/idx.rs` (the reader on files it
//! writes: valid, truncated, wrong magic, mismatched counts, labels out of
//! range, missing directory), `tests/training.rs` (determinism for naive and
//! im2col, 20-step loss agreement of im2col and OpenCL with naive within 1e-3
//! relative, a short real-data run that learns), `tests/checkpoint.rs`
//! (save/load/evaluate, resume, refused checkpoints, divergence) and
//! `tests/cli.rs` (the binary end to end and its errors). The real-data test
//! needs the data set (`make setup`) and the agreement test needs an OpenCL
//! device (PoCL); both fail rather than skip without them.

pub mod allocator;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod model;
pub mod output;
pub mod plot;
pub mod profile;
pub mod report;
pub mod train;

pub use error::{LenetError, Result};
