//! Storage: the names everything shares (`names`: object types, ids, repository paths), the
//! on-disk layout of repositories (`repo`), one crash-safe upload (`upload`) and the quota
//! counters uploads and deletes keep (`quota`), the per-repository objects, bytes and
//! snapshot times (`inventory`), the scrub that re-checks stored objects (`scrub`), and
//! which mounts are local enough for a lookup on an executor thread (`mounts`). No
//! HTTP and no users here: the handler
//! decides what to do, these modules do it on disk.

pub(crate) mod inventory;
pub(crate) mod mounts;
pub(crate) mod names;
pub(crate) mod quota;
pub(crate) mod repo;
pub(crate) mod scrub;
pub(crate) mod upload;
