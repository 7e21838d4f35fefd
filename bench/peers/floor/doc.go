// Package floor benchmarks the primitives that Sotto's operations cannot avoid (X25519, Ed25519,
// ML-KEM, HKDF, HMAC, the AEADs, age, a synced disk append) and a few composites built only from
// them (a ratchet message, a DH ratchet step, PQXDH, sealed sender, a group message), so each
// measured figure can be shown as a multiple of its floor. Everything is stdlib or
// golang.org/x/crypto (and filippo.io/age for attachments); nothing here is a protocol.
package floor
