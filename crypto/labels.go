package crypto

// Specification constants: every domain-separation label of the protocol.
// PROTOCOL.md §1.4 lists them in one table; a label is never reused for a
// second purpose.
const (
	// signaturePrefix starts every message signed with an Ed25519 key
	// (PROTOCOL.md §1.3).
	signaturePrefix = "sotto/v1 "

	// Signature labels.
	labelDeviceList   = "device list"
	labelSignedPreKey = "signed prekey"
	labelKEMPreKey    = "kem prekey"
	labelSenderCert   = "sender certificate"
	labelLogin        = "login"
)
