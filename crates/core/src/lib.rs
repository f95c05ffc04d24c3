//! paymux domain types. No I/O lives here: money, identifiers, the payment
//! state machine and the clock abstraction the rest of paymux builds on.

pub mod clock;
pub mod error;
pub mod id;
pub mod money;
pub mod payment;
pub mod refund;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::CoreError;
pub use id::{new_id, PaymentId};
pub use money::{Currency, Money};
pub use payment::{check_paid_amount, ChannelKind, PayMethod, PaymentEvent, PaymentStatus, Step};
pub use refund::{RefundEvent, RefundStatus};
