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
	// labelAccountDeletion signs the deletion of an account with the
	// account key (PROTOCOL.md §2.6).
	labelAccountDeletion = "account deletion"

	// KDF info strings of PQXDH and the Double Ratchet (PROTOCOL.md §3, §4).
	// labelPQXDH follows the PQXDH specification's form
	// info_curve_hash_pqkem.
	labelPQXDH       = "Sotto-v1_CURVE25519_SHA-256_ML-KEM-768"
	labelRatchetRoot = "sotto/v1 ratchet root"
)

// Labels of sealed sender, multi-recipient messages, sender keys, safety
// numbers and the store key (PROTOCOL.md §2.4, §5-§10). KDF info strings
// carry the "sotto/v1 " prefix themselves; signature labels get it from
// signWithLabel.
const (
	labelSealedEphemeral = "sotto/v1 sealed sender ephemeral"
	labelSealedStatic    = "sotto/v1 sealed sender static"
	labelMultiEphemeral  = "sotto/v1 multi-recipient ephemeral"
	labelMultiBody       = "sotto/v1 multi-recipient body"
	labelMultiKey        = "sotto/v1 multi-recipient key"
	labelMultiAuth       = "sotto/v1 multi-recipient auth"
	labelGroupKeys       = "sotto/v1 group message keys"
	labelGroupMessage    = "group message" // signature label
	labelSafetyNumber    = "sotto/v1 safety number"
	labelStoreValueKey   = "sotto/v1 store value key"
)
