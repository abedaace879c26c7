//! The OpenCL backend (on PoCL in CI) under the cross-backend conformance
//! suite, plus two properties of its own: a long run of LeNet training
//! steps does not grow device memory, and one step issues a bounded number
//! of kernel launches. With no OpenCL device these tests fail, never skip:
//! `make setup` installs PoCL.

mod common;

use kernels_core::{Backend, Conv2d, GradRequest, Optimizer, OptimizerState, Pool2d, PoolKind, SplitMix64, Tensor};
use kernels_opencl::{ClTensor, OpenCl};

fn opencl() -> OpenCl {
    OpenCl::new().unwrap_or_else(|e| {
        panic!("the OpenCL tests need a device and found none: {e}\n(run `make setup`, which installs PoCL)")
    })
}

common::conformance_suite!(opencl);

/// LeNet-5 (relu, max pooling) with Adam, by direct backend calls.
struct LeNetStep {
    params: Vec<ClTensor>,
    states: Vec<OptimizerState<ClTensor>>,
    x: ClTensor,
    labels: Vec<usize>,
    batch: usize,
}

const SHAPES: [&[usize]; 10] =
    [&[6, 1, 5, 5], &[6], &[16, 6, 5, 5], &[16], &[120, 400], &[120], &[84, 120], &[84], &[10, 84], &[10]];

impl LeNetStep {
    fn new(cl: &OpenCl, batch: usize) -> Self {
        let mut rng = SplitMix64::new(5);
        let opt = Optimizer::adam(1e-3);
        let mut params = Vec::new();
        let mut states = Vec::new();
        for shape in SHAPES {
            let bound = (1.0 / shape[1..].iter().product::<usize>().max(1) as f64).sqrt();
            params.push(cl.upload(&Tensor::from_fn(shape, |_| rng.uniform(-bound, bound) as f32)).unwrap());
            states.push(cl.optimizer_state(&opt, shape).unwrap());
        }
        let x = cl.upload(&Tensor::from_fn(&[batch, 1, 28, 28], |_| rng.next_f64() as f32)).unwrap();
        let labels = (0..batch).map(|_| rng.below(10)).collect();
        Self { params, states, x, labels, batch }
    }

    /// Forward, loss, backward and 10 parameter updates; returns the loss.
    fn step(&mut self, cl: &OpenCl) -> f64 {
        let (p, n) = (&self.params, self.batch);
        let pool = Pool2d::new(PoolKind::Max, 2, 2, 0);
        let (c1, c2) = (Conv2d::new(1, 2), Conv2d::new(1, 0));
        let z1 = cl.conv2d_forward(&self.x, &p[0], Some(&p[1]), &c1).unwrap();
        let a1 = cl.relu_forward(&z1).unwrap();
        let p1 = cl.pool2d_forward(&a1, &pool).unwrap();
        let z2 = cl.conv2d_forward(&p1, &p[2], Some(&p[3]), &c2).unwrap();
        let a2 = cl.relu_forward(&z2).unwrap();
        let flat = cl.reshape(cl.pool2d_forward(&a2, &pool).unwrap(), &[n, 400]).unwrap();
        let z3 = cl.linear_forward(&flat, &p[4], Some(&p[5])).unwrap();
        let a3 = cl.relu_forward(&z3).unwrap();
        let z4 = cl.linear_forward(&a3, &p[6], Some(&p[7])).unwrap();
        let a4 = cl.relu_forward(&z4).unwrap();
        let logits = cl.linear_forward(&a4, &p[8], Some(&p[9])).unwrap();
        let (loss, dlogits) = cl.softmax_cross_entropy(&logits, &self.labels).unwrap();
        let g5 = cl.linear_backward(&a4, &p[8], &dlogits, GradRequest::ALL).unwrap();
        let g4 = cl
            .linear_backward(&a3, &p[6], &cl.relu_backward(&z4, g5.dx.as_ref().unwrap()).unwrap(), GradRequest::ALL)
            .unwrap();
        let g3 = cl
            .linear_backward(&flat, &p[4], &cl.relu_backward(&z3, g4.dx.as_ref().unwrap()).unwrap(), GradRequest::ALL)
            .unwrap();
        let dp2 = cl.reshape(g3.dx.unwrap(), &[n, 16, 5, 5]).unwrap();
        let dz2 = cl.relu_backward(&z2, &cl.pool2d_backward(&a2, &dp2, &pool).unwrap()).unwrap();
        let g2 = cl.conv2d_backward(&p1, &p[2], &dz2, &c2, GradRequest::ALL).unwrap();
        let dz1 = cl.relu_backward(&z1, &cl.pool2d_backward(&a1, g2.dx.as_ref().unwrap(), &pool).unwrap()).unwrap();
        let g1 = cl.conv2d_backward(&self.x, &p[0], &dz1, &c1, GradRequest::PARAMS).unwrap();
        let grads = [g1.dw, g1.db, g2.dw, g2.db, g3.dw, g3.db, g4.dw, g4.db, g5.dw, g5.db];
        for ((param, state), grad) in self.params.iter_mut().zip(&mut self.states).zip(grads) {
            cl.optimizer_step(param, &grad.unwrap(), state).unwrap();
        }
        loss
    }
}

/// Resident set size of this process in bytes, from /proc (Linux).
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn three_hundred_lenet_steps_do_not_grow_device_memory() {
    let cl = opencl();
    let mut net = LeNetStep::new(&cl, 32);
    for _ in 0..20 {
        net.step(&cl);
    }
    cl.sync().unwrap();
    let (live_before, rss_before) = (cl.live_bytes(), rss_bytes());
    let first = net.step(&cl);
    let mut last = first;
    for _ in 0..300 {
        last = net.step(&cl);
    }
    cl.sync().unwrap();
    assert!(last.is_finite() && last < first, "training went nowhere: loss {first} -> {last}");
    // Every buffer a step allocates is dropped by its end: the count is flat.
    assert_eq!(cl.live_bytes(), live_before, "device bytes alive grew over 300 steps");
    // And the driver (PoCL keeps buffers in host memory) holds no more: a
    // leak of one step's activations per step would add ~0.5 GB here.
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        assert!(after < before + (64 << 20), "resident memory grew from {before} to {after} bytes over 300 steps");
    }
}

#[test]
fn a_lenet_step_issues_a_bounded_number_of_launches() {
    let cl = opencl();
    let mut net = LeNetStep::new(&cl, 64);
    net.step(&cl);
    cl.reset_profile();
    net.step(&cl);
    let p = cl.profile();
    // Forward 13 (each LeNet conv: a padding copy + the direct conv kernel
    // with the bias fused, or im2col + GEMM), loss 1, backward 25 on a CPU
    // device (conv2: db, pad x, pad dy, dW, pad dy, dX; conv1: the first
    // four), Adam 10: 49. Transfers: the labels up and the loss down.
    eprintln!("one LeNet step: {p:?}");
    assert!(p.launches <= 50, "a LeNet step issued {} launches", p.launches);
    assert!(p.transfers <= 2, "a LeNet step made {} transfers (only labels and loss should cross)", p.transfers);
    assert!(p.kernel_ns > 0, "{p:?}");
}
