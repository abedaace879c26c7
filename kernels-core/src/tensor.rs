//! The host tensor: a shape and a row-major `Vec`. NCHW for activations,
//! OIHW (K, C, R, S) for conv weights, [out, in] for linear weights.

use crate::error::{Error, Result};
use crate::float::Float;

/// Anything with a shape: host tensors and every backend's device tensor.
pub trait Shaped {
    fn shape(&self) -> &[usize];
    /// Number of elements.
    fn len(&self) -> usize {
        self.shape().iter().product()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense row-major host tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T> Shaped for Tensor<T> {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn len(&self) -> usize {
        self.data.len()
    }
}

impl<T: Float> Tensor<T> {
    /// Builds a tensor, checking that `data` holds exactly the shape's
    /// element count.
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(Error::DataLength { shape: shape.to_vec(), expected, actual: data.len() });
        }
        Ok(Self { shape: shape.to_vec(), data })
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    pub fn full(shape: &[usize], value: T) -> Self {
        let len = shape.iter().product();
        Self { shape: shape.to_vec(), data: vec![value; len] }
    }

    /// Element `i` (row-major flat index) is `f(i)`.
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(usize) -> T) -> Self {
        let len: usize = shape.iter().product();
        Self { shape: shape.to_vec(), data: (0..len).map(&mut f).collect() }
    }

    /// 0, 1, 2, ... in row-major order (the worked examples use it).
    pub fn arange(shape: &[usize]) -> Self {
        Self::from_fn(shape, T::from_usize)
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        Self::new(shape, self.data)
    }

    /// Converts every element (f32 <-> f64).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|v| U::from_f64(v.to_f64())).collect() }
    }

    /// Element at a multi-index; `None` when the index is out of range or has
    /// the wrong rank.
    pub fn get(&self, index: &[usize]) -> Option<T> {
        if index.len() != self.shape.len() {
            return None;
        }
        let mut flat = 0;
        for (&i, &d) in index.iter().zip(&self.shape) {
            if i >= d {
                return None;
            }
            flat = flat * d + i;
        }
        self.data.get(flat).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Tensor::<f32>::new(&[2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::<f32>::new(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("[2, 3]"), "{err}");
    }

    #[test]
    fn get_is_row_major() {
        let t = Tensor::<f64>::arange(&[2, 3, 4]);
        assert_eq!(t.get(&[1, 2, 3]), Some(23.0));
        assert_eq!(t.get(&[0, 1, 0]), Some(4.0));
        assert_eq!(t.get(&[2, 0, 0]), None);
        assert_eq!(t.get(&[0, 0]), None);
    }

    #[test]
    fn reshape_keeps_data_and_checks_count() {
        let t = Tensor::<f32>::arange(&[2, 3]);
        let r = t.clone().reshape(&[3, 2]).unwrap();
        assert_eq!(r.data(), t.data());
        assert!(t.reshape(&[4, 2]).is_err());
    }
}
