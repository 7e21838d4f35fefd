// Package client is the Sotto library that apps embed: it holds an account
// and its device keys, talks to the key server and the relay, does all the
// cryptography (PQXDH, the Double Ratchet, sealed sender), and keeps
// everything it stores on the device encrypted.
//
// An app creates an account once with [Create] (a directory and a
// passphrase, or its own [store.Store]) and afterwards opens it with
// [Open]. Both return a running [*Client]: it connects to the relay,
// receives and decrypts what is waiting, and retries what is waiting to be
// sent, until [Client.Close]. What happens is reported as typed values on
// the channel returned by [Client.Events]: [MessageEvent], [UpdateEvent],
// [ReceiptEvent], [TypingEvent], [GroupEvent], [DeviceEvent],
// [SafetyNumberEvent] and [ConnectionEvent].
//
//	c, err := client.Create(ctx, client.Options{Dir: dir, Passphrase: pw, KeyServerURL: ks, RelayURL: relay, TrustRoots: roots})
//	invite := c.Invite(false).String()        // give this to a friend (text or QR payload)
//	peer, err := c.AddContact(ctx, theirInvite)
//	id, err := c.Send(ctx, peer.Conversation, client.Text("hello"))
//	for ev := range c.Events() { ... }
//
// What an app finds here:
//
//   - accounts and devices: [Create], [Open], [Link] with [Client.LinkDevice]
//     (a [LinkCode] shown as text or QR payload), [Client.Devices],
//     [Client.RemoveDevice], [Client.ChangePassphrase], [Client.Export] and
//     [Import];
//   - contacts: [Client.Invite] / [ParseInvite], [Client.AddContact],
//     [Client.AddContactByHandle], [Client.SetBlocked], [Client.SafetyNumber]
//     and [Client.SetVerified];
//   - messages: [Client.Send] with [Text] (replies, attachments from
//     [Client.UploadAttachment], fetched with [Client.DownloadAttachment]),
//     [Client.React], [Client.Edit] and [Client.Delete] (within
//     [DeleteWindow]), [Client.SetTimer] (disappearing messages),
//     [Client.MarkRead], [Client.SetTyping];
//   - groups: [Client.CreateGroup], [Client.AddMembers],
//     [Client.RemoveMembers], [Client.Rename], [Client.SetAdmin],
//     [Client.Leave];
//   - history: [Client.History] (paging backwards), [Client.HistorySince]
//     (seek by time), [Client.Search], [Client.Message]; a [Message] names
//     its author's sending device ([Message.FromDevice]).
//
// # Devices of one account
//
// What one device sends reaches the account's other devices as a
// transcript, and what contacts send reaches every device. Groups are known
// on every device: a group created, changed or joined on one device reaches
// the others (group changes are copied to them as transcripts), and a newly
// linked device receives the account's groups and contacts with its
// provisioning message ([Client.LinkDevice]); it does not receive the
// history. Each device has its own sender key per group.
//
// # Size of a message
//
// A message's content, padded, must fit in 2 KiB, because a 1:1 message
// (and the transcript that copies any message to the account's other
// devices) travels as one relay header of at most 4 KiB per device,
// including a post-quantum prekey message. That is about 1.9 KB of text;
// [Client.Send] returns [ErrTooLarge] beyond it. Send longer text as an
// attachment ([Client.UploadAttachment]), which has no such bound.
//
// # Reliability
//
// A sent message is stored (status [StatusPending]) and placed in the
// outbox before Send returns; the outbox retries with exponential backoff
// and jitter until the relay accepts it ([StatusSent]); receipts move it to
// [StatusDelivered] and [StatusRead]. Messages that wait in the outbox
// together for the same contact share one envelope per device (a batch,
// PROTOCOL.md §13.4), each keeping its ID and status. On the relay's 409
// (the recipient's devices changed) the client refreshes the device list,
// warns, and retries.
// Received messages are processed in order: opened, decrypted, stored, and
// only then acknowledged to the relay, so a crash loses nothing; a message
// that does not decrypt makes the client ask its sender to resend it over a
// fresh session. A group message that does not decrypt (its sender's key
// was lost, or this device was linked or reinstalled since) makes the
// client ask the sender's device for its sender key: the sender sends the
// key and that message again, pairwise; other messages under a key this
// device never held are not recovered. One-time prekeys are refilled below
// [PreKeyRefillThreshold]; the signed and last-resort prekeys are rotated
// every [SignedPreKeyRotation], and old ones kept for [SignedPreKeyGrace].
//
// # Security properties
//
//   - Messages are end-to-end encrypted per device: a session (PQXDH, then
//     the Double Ratchet) with every device in the recipient's device list,
//     and with the sender's own other devices. The device list is signed
//     by the recipient's account key and is checked against the account ID
//     the app asked for ([crypto.VerifyDeviceList]), so the key server
//     cannot add a device or substitute a key without being detected.
//   - Every per-device message is wrapped in a sealed-sender envelope: the
//     relay learns the recipient device, a padded size and a time, never the
//     sender. Plaintexts are padded to size buckets ([crypto.Pad]) first.
//   - A change in a contact's device list is reported with a
//     [SafetyNumberEvent] (new or removed devices) so that apps can warn;
//     [Client.SafetyNumber] gives the number to compare out of band and
//     [Client.SetVerified] records the comparison.
//   - Received messages are de-duplicated by (sender, message ID), so a
//     message redelivered by the relay is shown once.
//   - Session state is persisted after every message, before the relay is
//     told the message was received: a crash never loses a ratchet step.
//   - The local store is encrypted at rest under a random store key wrapped
//     with the passphrase (package client/store/pebblestore); its Pebble
//     keys do not reveal contacts or content. What it reveals: the number
//     and size of records and message times.
//
// What it does not protect: the relay sees when a device is online and how
// much it receives; the key server sees who fetches whose prekeys (first
// contact) and registers handles; a compromised device reveals its history.
//
// # Key management
//
// The account key (Ed25519) lives on the device that created the account
// and is exported in backups ([Client.Export]); it signs device lists. Each
// device has its own identity key, which never leaves it. Prekeys are
// generated on the device: the client uploads one-time prekeys in batches
// and refills them when the key server reports fewer than
// [PreKeyRefillThreshold]. The store key is random and wrapped with the
// passphrase (age, scrypt); changing the passphrase rewraps it only. Keys
// are never logged: the logger receives account IDs, device numbers, sizes
// and error classes.
//
// # Backwards compatibility
//
// The exported API follows semantic versioning once tagged v1. Stored
// records and message content carry a version byte; a newer client reads
// every older version, and an older client refuses newer records with an
// error rather than misreading them. Ratchet sessions are not part of
// exports: after an import, sessions are set up afresh (see
// [Client.Export]).
package client
