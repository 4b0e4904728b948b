//! What the simulated vendors delivered: one record per recipient, in memory and
//! optionally as JSON lines in a file, so duplicates can be counted across restarts.
//!
//! The file is the ground truth of a simulation run: a record is written (one `write`
//! of whole lines, to a file opened in append mode) before the vendor reports success,
//! so killing the process, even with `SIGKILL`, loses no delivery that was acknowledged.
//! There is no `fsync`: a power cut may still lose the tail, which a simulation accepts.
//! Several handles, in one process or several, may append to the same file.
//!
//! Records hold full phone numbers (the point is to count per recipient); `Debug`
//! masks them like everywhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sms_core::sync::lock;
use sms_core::{MessageId, PhoneNumber, VendorId};

/// One message delivered to one recipient by one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The gateway's id of the message.
    pub message_id: MessageId,
    /// The vendor that delivered it.
    pub vendor: VendorId,
    /// The recipient.
    pub recipient: PhoneNumber,
    /// The vendor's id for the send (shared by the recipients of one send).
    pub vendor_message_id: String,
    /// When the vendor accepted it.
    pub at: DateTime<Utc>,
}

/// A recipient who got the same message more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The message.
    pub message_id: MessageId,
    /// The recipient.
    pub recipient: PhoneNumber,
    /// How many times it was delivered to them (at least 2).
    pub deliveries: usize,
    /// The vendor of each delivery, in log order.
    pub vendors: Vec<VendorId>,
}

/// A shared delivery log. Cloning is cheap and every clone records into the same log.
#[derive(Clone)]
pub struct DeliveryLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// Records written through this handle (and its clones), in order; `None` when the
    /// log keeps nothing in memory.
    memory: Option<Mutex<Vec<DeliveryRecord>>>,
    file: Option<FileSink>,
}

struct FileSink {
    path: PathBuf,
    /// Unbuffered on purpose: each batch is formatted first and handed to the OS in one
    /// `write`, so there is nothing left in user space for a crash to lose.
    file: Mutex<File>,
}

impl FileSink {
    fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }
}

impl DeliveryLog {
    /// A log kept only in memory.
    pub fn in_memory() -> Self {
        Self::with(Some(Mutex::new(Vec::new())), None)
    }

    /// A log that keeps nothing: for a long-running server nobody asks about its
    /// deliveries, whose memory must not grow with every message. Its handles always
    /// report no records.
    pub fn discarding() -> Self {
        Self::with(None, None)
    }

    /// A log kept in memory and appended to `path` as JSON lines. The file is created if
    /// missing; what it already holds is kept (read it with [`DeliveryLog::read_file`]).
    pub fn append_to(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::with(
            Some(Mutex::new(Vec::new())),
            Some(FileSink::open(path)?),
        ))
    }

    /// A log appended to `path` as JSON lines and not kept in memory: the file is the
    /// only record (read it with [`DeliveryLog::read_file`]), and the process does not
    /// grow with every delivery. Handles report no records.
    pub fn append_only_to(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::with(None, Some(FileSink::open(path)?)))
    }

    fn with(memory: Option<Mutex<Vec<DeliveryRecord>>>, file: Option<FileSink>) -> Self {
        Self {
            inner: Arc::new(Inner { memory, file }),
        }
    }

    /// This handle's records in memory (none when it keeps none).
    fn memory(&self) -> MutexGuard<'_, Vec<DeliveryRecord>> {
        static NONE: Mutex<Vec<DeliveryRecord>> = Mutex::new(Vec::new());
        lock(self.inner.memory.as_ref().unwrap_or(&NONE))
    }

    /// The file this log appends to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.file.as_ref().map(|sink| sink.path.as_path())
    }

    /// Records one delivery. See [`DeliveryLog::record_all`].
    pub fn record(&self, record: DeliveryRecord) -> io::Result<()> {
        self.record_all(vec![record])
    }

    /// Records the deliveries of one send. When the log has a file, they reach the OS in
    /// one write before this returns; on error nothing is kept in memory either, and the
    /// caller must not report the send as a success.
    pub fn record_all(&self, records: Vec<DeliveryRecord>) -> io::Result<()> {
        if let Some(sink) = &self.inner.file {
            let mut lines = Vec::with_capacity(records.len() * 192);
            for record in &records {
                serde_json::to_writer(&mut lines, record)?;
                lines.push(b'\n');
            }
            let mut file = lock(&sink.file);
            file.write_all(&lines)?;
            file.flush()?;
        }
        if let Some(memory) = &self.inner.memory {
            lock(memory).extend(records);
        }
        Ok(())
    }

    /// Every record written through this handle and its clones, in order. Records other
    /// handles or earlier runs appended to the same file are not included: use
    /// [`DeliveryLog::read_file`] for those.
    pub fn records(&self) -> Vec<DeliveryRecord> {
        self.memory().clone()
    }

    /// How many records this handle holds.
    pub fn len(&self) -> usize {
        self.memory().len()
    }

    /// Whether this handle holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deliveries per message, over this handle's records (see [`count_by_message`]).
    pub fn count_by_message(&self) -> BTreeMap<MessageId, usize> {
        count_by_message(&self.memory())
    }

    /// Recipients who got a message more than once, over this handle's records.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        duplicates(&self.memory())
    }

    /// Reads every record of a log file, whichever handles and runs wrote them.
    ///
    /// A last line without its newline that does not parse is skipped: it can only be a
    /// write cut short by a crash, and a send whose write did not complete was never
    /// reported as delivered. Any other line that does not parse is an error naming it.
    pub fn read_file(path: impl AsRef<Path>) -> io::Result<Vec<DeliveryRecord>> {
        let text = std::fs::read_to_string(path)?;
        let mut records = Vec::new();
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let complete = line.ends_with('\n');
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(record) => records.push(record),
                Err(_) if !complete => break,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "delivery log line {}: expected a delivery record, {e}",
                            index + 1
                        ),
                    ));
                }
            }
        }
        Ok(records)
    }
}

impl fmt::Debug for DeliveryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryLog")
            .field("path", &self.path())
            .field("records", &self.len())
            .finish()
    }
}

/// Deliveries per message: one per recipient per send, so a message to three people
/// sent once counts 3, and sent twice counts 6.
pub fn count_by_message(records: &[DeliveryRecord]) -> BTreeMap<MessageId, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record.message_id).or_insert(0) += 1;
    }
    counts
}

/// Every (message, recipient) pair delivered more than once, ordered by message then
/// recipient. A pair delivered twice is an SMS the recipient got twice, which the
/// gateway must never cause outside a crash or a timeout that left a send's outcome
/// unknown.
pub fn duplicates(records: &[DeliveryRecord]) -> Vec<Duplicate> {
    let mut by_pair: BTreeMap<(MessageId, &PhoneNumber), Vec<VendorId>> = BTreeMap::new();
    for record in records {
        by_pair
            .entry((record.message_id, &record.recipient))
            .or_default()
            .push(record.vendor.clone());
    }
    by_pair
        .into_iter()
        .filter(|(_, vendors)| vendors.len() > 1)
        .map(|((message_id, recipient), vendors)| Duplicate {
            message_id,
            recipient: recipient.clone(),
            deliveries: vendors.len(),
            vendors,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message_id: MessageId, vendor: &str, recipient: &str) -> DeliveryRecord {
        DeliveryRecord {
            message_id,
            vendor: VendorId::new(vendor).unwrap(),
            recipient: PhoneNumber::parse(recipient).unwrap(),
            vendor_message_id: "v-1".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn an_append_only_log_writes_its_file_and_keeps_nothing_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries.jsonl");
        let log = DeliveryLog::append_only_to(&path).unwrap();
        let id = MessageId::new();
        log.record_all(vec![
            record(id, "aliyun", "+8613800138000"),
            record(id, "aliyun", "+8613800138001"),
        ])
        .unwrap();
        assert!(log.is_empty());
        assert!(log.records().is_empty());
        let written = DeliveryLog::read_file(&path).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(written[1].recipient.as_str(), "+8613800138001");

        let discarding = DeliveryLog::discarding();
        discarding
            .record(record(id, "tencent", "+8613800138000"))
            .unwrap();
        assert_eq!(discarding.len(), 0);
        assert!(discarding.duplicates().is_empty());
    }

    #[test]
    fn clones_share_one_log() {
        let log = DeliveryLog::in_memory();
        let clone = log.clone();
        let id = MessageId::new();
        clone
            .record(record(id, "aliyun", "+8613800138000"))
            .unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log.records()[0].message_id, id);
        assert!(log.path().is_none());
    }

    #[test]
    fn counts_deliveries_and_finds_duplicates() {
        let once = MessageId::new();
        let twice = MessageId::new();
        let records = vec![
            record(once, "aliyun", "+8613800138000"),
            record(once, "aliyun", "+8613800138001"),
            record(twice, "aliyun", "+8613800138000"),
            record(twice, "tencent", "+8613800138000"),
            record(twice, "aliyun", "+8613800138001"),
        ];
        let counts = count_by_message(&records);
        assert_eq!(counts[&once], 2);
        assert_eq!(counts[&twice], 3);
        let dups = duplicates(&records);
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].message_id, twice);
        assert_eq!(dups[0].recipient.as_str(), "+8613800138000");
        assert_eq!(dups[0].deliveries, 2);
        assert_eq!(
            dups[0].vendors,
            [
                VendorId::new("aliyun").unwrap(),
                VendorId::new("tencent").unwrap()
            ]
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deliveries.jsonl");
        let log = DeliveryLog::append_to(&path).unwrap();
        log.record(record(MessageId::new(), "aliyun", "+8613800138000"))
            .unwrap();
        drop(log);

        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"message_id\":\"01").unwrap();
        assert_eq!(DeliveryLog::read_file(&path).unwrap().len(), 1);

        file.write_all(b"\n").unwrap();
        let e = DeliveryLog::read_file(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn debug_masks_phone_numbers() {
        let r = record(MessageId::new(), "aliyun", "+8613800138000");
        assert!(!format!("{r:?}").contains("13800138000"));
    }
}
