//! One backend shared by many threads gives each thread the results it
//! would get alone. Every convolution stages data in the backend's one
//! scratch buffer (im2col columns, the direct path's padded input); eight
//! threads run conv forward and backward on different problems at once,
//! on both conv paths, and every result must equal the single-thread one
//! bit for bit (same kernels, same inputs, same launch shapes).

use std::sync::atomic::{AtomicUsize, Ordering};

use kernels_core::{Backend, Conv2d, GradRequest, Shaped, SplitMix64, Tensor};
use kernels_opencl::{Config, OpenCl};

const THREADS: usize = 8;
const ROUNDS: usize = 15;

struct Problem {
    x: Tensor<f32>,
    w: Tensor<f32>,
    b: Tensor<f32>,
    dy: Tensor<f32>,
    params: Conv2d,
}

fn random(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut rng = SplitMix64::new(seed);
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0) as f32)
}

/// Thread `t`'s problem: a different size per thread, so the threads need
/// different amounts of scratch and overwrite each other's if they share it.
fn problem(t: usize) -> Problem {
    let (n, c, k, hw) = (2 + t % 3, 1 + t % 4, 4 + t, 12 + 2 * t);
    let params = Conv2d { stride: [1, 1], padding: [t % 3, t % 2], dilation: [1, 1] };
    let (oh, ow) = (hw + 2 * params.padding[0] - 4, hw + 2 * params.padding[1] - 4);
    let seed = 100 * t as u64;
    Problem {
        x: random(&[n, c, hw, hw], seed),
        w: random(&[k, c, 5, 5], seed + 1),
        b: random(&[k], seed + 2),
        dy: random(&[n, k, oh, ow], seed + 3),
        params,
    }
}

/// y, dx, dw, db of one problem, downloaded.
fn run(cl: &OpenCl, p: &Problem) -> [Vec<f32>; 4] {
    let (x, w, b, dy) =
        (cl.upload(&p.x).unwrap(), cl.upload(&p.w).unwrap(), cl.upload(&p.b).unwrap(), cl.upload(&p.dy).unwrap());
    let y = cl.conv2d_forward(&x, &w, Some(&b), &p.params).unwrap();
    assert_eq!(y.shape(), p.dy.shape());
    let g = cl.conv2d_backward(&x, &w, &dy, &p.params, GradRequest::ALL).unwrap();
    let down = |t: &kernels_opencl::ClTensor| cl.download(t).unwrap().data().to_vec();
    [down(&y), down(g.dx.as_ref().unwrap()), down(g.dw.as_ref().unwrap()), down(g.db.as_ref().unwrap())]
}

fn shared_backend_matches_single_thread(direct_conv: bool) -> usize {
    let cl = OpenCl::with_config(None, &Config { direct_conv: Some(direct_conv), ..Config::default() })
        .expect("an OpenCL device (install pocl-opencl-icd and ocl-icd-opencl-dev, or run `make setup`)");
    let problems: Vec<Problem> = (0..THREADS).map(problem).collect();
    let alone: Vec<[Vec<f32>; 4]> = problems.iter().map(|p| run(&cl, p)).collect();
    let wrong = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (p, expected) in problems.iter().zip(&alone) {
            let (cl, wrong) = (&cl, &wrong);
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    if run(cl, p) != *expected {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    wrong.into_inner()
}

#[test]
fn threads_sharing_one_backend_get_their_single_thread_results() {
    let direct = shared_backend_matches_single_thread(true);
    let im2col = shared_backend_matches_single_thread(false);
    let calls = THREADS * ROUNDS;
    assert_eq!(
        (direct, im2col),
        (0, 0),
        "wrong results out of {calls} concurrent forward+backward calls per path (direct, im2col)"
    );
}
