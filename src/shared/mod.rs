//! `Value<T>` and `Array<T>`: plain data in shared memory, each with its
//! own lock, like `multiprocessing.Value` and `multiprocessing.Array`.

mod array;
mod value;

pub use array::{Array, ArrayError};
pub use value::Value;
