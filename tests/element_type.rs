//! Element-type identity (`ShmType`): what `open` accepts and refuses.
//! Two services built separately see "the same" struct under different
//! paths (another crate name, another module); a stable name makes them
//! agree, the default name (`std::any::type_name`) does not.

use shmproc::{Mutex, OpenError, Pod, Queue, ShmType, Value, Zeroable};

mod service_a {
    use super::*;
    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    #[bytemuck(crate = "shmproc::bytemuck")]
    #[repr(C)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
        pub px: u32,
    }
    shmproc::shm_type!(Order = "orders.Order/v1");

    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    #[bytemuck(crate = "shmproc::bytemuck")]
    #[repr(C)]
    pub struct Unnamed {
        pub a: u64,
    }
    shmproc::shm_type!(Unnamed);
}

mod service_b {
    use super::*;
    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    #[bytemuck(crate = "shmproc::bytemuck")]
    #[repr(C)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
        pub px: u32,
    }
    impl ShmType for Order {
        fn type_name() -> std::borrow::Cow<'static, str> {
            "orders.Order/v1".into()
        }
    }
    // A queue item also needs `Handoff`: the plain-data one, beside a
    // hand-written `ShmType` (shm_type! writes both).
    shmproc::handoff_pod!(Order);

    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    #[bytemuck(crate = "shmproc::bytemuck")]
    #[repr(C)]
    pub struct Unnamed {
        pub a: u64,
    }
    shmproc::shm_type!(Unnamed);
}

#[test]
fn a_stable_name_lets_two_paths_of_the_same_struct_share_objects() {
    let v = Value::new(service_a::Order { id: 7, qty: 2, px: 300 }).unwrap();
    let got = Value::<service_b::Order>::open(v.name()).unwrap().get().unwrap();
    assert_eq!((got.id, got.qty, got.px), (7, 2, 300));

    let q = Queue::<service_a::Order>::new(4).unwrap();
    let q_b = Queue::<service_b::Order>::open(q.name()).unwrap();
    q_b.put(service_b::Order { id: 1, qty: 1, px: 1 }).unwrap();
    assert_eq!(q.get().unwrap(), service_a::Order { id: 1, qty: 1, px: 1 });
}

#[test]
fn default_names_differ_by_path_and_are_refused() {
    let m = Mutex::new(service_a::Unnamed { a: 1 }).unwrap();
    let err = Mutex::<service_b::Unnamed>::open(m.name()).unwrap_err();
    assert!(matches!(err, OpenError::IncompatibleType { .. }), "{err}");
    // Same size and alignment, other name: refused too.
    assert!(matches!(
        Value::<u64>::open(m.name()),
        Err(OpenError::WrongKind { .. }) | Err(OpenError::IncompatibleType { .. })
    ));
    let v = Value::new(5u64).unwrap();
    assert!(matches!(Value::<i64>::open(v.name()), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(Value::<service_a::Unnamed>::open(v.name()), Err(OpenError::IncompatibleType { .. })));
}

#[test]
fn primitive_and_array_names_are_fixed() {
    assert_eq!(u64::type_name(), "u64");
    assert_eq!(<[i32; 4]>::type_name(), "[i32; 4]");
    assert_eq!(<[[u8; 2]; 3]>::type_name(), "[[u8; 2]; 3]");
    assert_eq!(service_a::Order::type_name(), "orders.Order/v1");
}
