//! One LeNet-5 training step (batch 256) by direct backend calls: forward,
//! loss, backward, and an Adam update of all 10 parameter tensors; reports
//! the kernel launches and transfers it issues and its time.
//!
//! conv 1→6 5x5 pad 2, relu, max 2x2 → conv 6→16 5x5, relu, max 2x2 →
//! fc 400→120 relu → fc 120→84 relu → fc 84→10 → softmax cross-entropy.

use kernels_core::{
    Backend, Conv2d, GradRequest, Optimizer, OptimizerState, Pool2d, PoolKind, Result, SplitMix64, Tensor,
};
use kernels_opencl::{ClTensor, OpenCl};

const BATCH: usize = 256;

pub struct Net {
    params: Vec<ClTensor>,
    states: Vec<OptimizerState<ClTensor>>,
    x: ClTensor,
    labels: Vec<usize>,
}

const SHAPES: [&[usize]; 10] =
    [&[6, 1, 5, 5], &[6], &[16, 6, 5, 5], &[16], &[120, 400], &[120], &[84, 120], &[84], &[10, 84], &[10]];

impl Net {
    pub fn new(cl: &OpenCl) -> Result<Self> {
        let mut rng = SplitMix64::new(11);
        let mut params = Vec::new();
        let mut states = Vec::new();
        let opt = Optimizer::adam(1e-3);
        for shape in SHAPES {
            let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
            let bound = (1.0 / fan_in as f64).sqrt();
            params.push(cl.upload(&Tensor::from_fn(shape, |_| rng.uniform(-bound, bound) as f32))?);
            states.push(cl.optimizer_state(&opt, shape)?);
        }
        let x = cl.upload(&Tensor::from_fn(&[BATCH, 1, 28, 28], |_| rng.next_f64() as f32))?;
        let labels = (0..BATCH).map(|_| rng.below(10)).collect();
        Ok(Self { params, states, x, labels })
    }

    /// One step; returns the loss.
    pub fn step(&mut self, cl: &OpenCl) -> Result<f64> {
        let p = &self.params;
        let pool = Pool2d::new(PoolKind::Max, 2, 2, 0);
        let (c1, c2) = (Conv2d::new(1, 2), Conv2d::new(1, 0));
        let a1 = cl.conv2d_forward(&self.x, &p[0], Some(&p[1]), &c1)?;
        let r1 = cl.relu_forward(&a1)?;
        let s1 = cl.pool2d_forward(&r1, &pool)?;
        let a2 = cl.conv2d_forward(&s1, &p[2], Some(&p[3]), &c2)?;
        let r2 = cl.relu_forward(&a2)?;
        let s2 = cl.pool2d_forward(&r2, &pool)?;
        let flat = cl.reshape(s2, &[BATCH, 400])?;
        let f1 = cl.linear_forward(&flat, &p[4], Some(&p[5]))?;
        let h1 = cl.relu_forward(&f1)?;
        let f2 = cl.linear_forward(&h1, &p[6], Some(&p[7]))?;
        let h2 = cl.relu_forward(&f2)?;
        let logits = cl.linear_forward(&h2, &p[8], Some(&p[9]))?;
        let (loss, dlogits) = cl.softmax_cross_entropy(&logits, &self.labels)?;
        let g3 = cl.linear_backward(&h2, &p[8], &dlogits, GradRequest::ALL)?;
        let missing = || kernels_core::Error::Device("a requested gradient is missing".into());
        let dh2 = cl.relu_backward(&f2, g3.dx.as_ref().ok_or_else(missing)?)?;
        let g2 = cl.linear_backward(&h1, &p[6], &dh2, GradRequest::ALL)?;
        let dh1 = cl.relu_backward(&f1, g2.dx.as_ref().ok_or_else(missing)?)?;
        let g1 = cl.linear_backward(&flat, &p[4], &dh1, GradRequest::ALL)?;
        let ds2 = cl.reshape(g1.dx.ok_or_else(missing)?, &[BATCH, 16, 5, 5])?;
        let dr2 = cl.pool2d_backward(&r2, &ds2, &pool)?;
        let da2 = cl.relu_backward(&a2, &dr2)?;
        let gc2 = cl.conv2d_backward(&s1, &p[2], &da2, &c2, GradRequest::ALL)?;
        let dr1 = cl.pool2d_backward(&r1, gc2.dx.as_ref().ok_or_else(missing)?, &pool)?;
        let da1 = cl.relu_backward(&a1, &dr1)?;
        let gc1 = cl.conv2d_backward(&self.x, &p[0], &da1, &c1, GradRequest::PARAMS)?;
        let grads = [gc1.dw, gc1.db, gc2.dw, gc2.db, g1.dw, g1.db, g2.dw, g2.db, g3.dw, g3.db];
        for ((param, state), grad) in self.params.iter_mut().zip(&mut self.states).zip(grads) {
            cl.optimizer_step(param, &grad.ok_or_else(missing)?, state)?;
        }
        Ok(loss)
    }
}

pub fn bench(cl: &OpenCl, reps: usize) -> Result<()> {
    let mut net = Net::new(cl)?;
    let first = net.step(cl)?;
    let mut last = first;
    for _ in 0..20 {
        last = net.step(cl)?;
    }
    if !(last.is_finite() && last < first) {
        return Err(kernels_core::Error::Device(format!("LeNet step validation: loss went {first} -> {last}")));
    }
    cl.sync()?;
    let before = cl.live_bytes();
    let (s, p) = super::time(cl, reps, || net.step(cl))?;
    println!(
        "lenet step (batch {BATCH}, adam)  {:>8.3} ms [{:.3}, {:.3}]  {} launches, {} transfers, kernels {:.3} ms, transfers {:.3} ms; loss {first:.4} -> {last:.4}; live device bytes {before} -> {}",
        s.median * 1e3,
        s.min * 1e3,
        s.max * 1e3,
        p.launches,
        p.transfers,
        p.kernel_ns as f64 / 1e6,
        p.transfer_ns as f64 / 1e6,
        cl.live_bytes()
    );
    Ok(())
}
