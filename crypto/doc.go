// Package crypto implements Sotto's protocol primitives and state machines:
// identities and device lists, PQXDH session setup, the Double Ratchet,
// sealed sender, multi-recipient messages, sender keys for groups, padding,
// safety numbers, attachment encryption and the wrapping of the client's
// store key.
//
// It performs no I/O: no network, no storage, no clock (callers pass the
// time in). Every byte layout it produces or accepts is specified in
// PROTOCOL.md at the root of the repository, and each function that
// implements a step of that document names the section it implements.
//
// # Security properties
//
// Decoders of bytes that come from the network return errors, never panic.
// Every authentication or decryption failure of a message surfaces as
// [ErrDecrypt], so that the error gives no oracle; replays are reported
// distinctly as [ErrDuplicateMessage] so that applications can drop them
// quietly. Secret key types never print their bytes.
//
// # Key management
//
// Private keys are generated from crypto/rand. Values documented as secret
// (private keys, session state, sender-key state, store keys) must be kept
// encrypted at rest by the caller; the client package does this.
//
// # Backwards compatibility
//
// Every serialized structure starts with a version byte. Decoders reject
// versions they do not know.
package crypto
