// Package keyserver is Sotto's key server: the HTTP service where a sender
// learns how to start a session with a device it has never talked to.
//
// It keeps accounts and their signed device lists, each device's prekeys
// (signed, last-resort ML-KEM, one-time EC and one-time ML-KEM), the handle
// directory, and it issues the short-lived tokens the relay trusts and the
// sender certificates that make sealed sender work. API.md at the root of
// the repository documents every endpoint.
//
// # Security properties
//
// The key server cannot substitute an identity: account IDs are derived
// from account keys and device lists are signed by the account key, and
// both are verified with package crypto before they are stored, as is
// every signed prekey. Clients verify again end to end: bundle responses
// carry the signed device list.
//
// A one-time prekey is handed out at most once, also under concurrent
// fetches, and the claim is durable before the response is written (see
// store.DB for how claims share synced commits).
//
// Logs never contain keys, tokens, handles or request bodies; internal
// errors are logged and answered with a generic 500.
//
// # What it is not responsible for
//
// It never sees message content and does not store messages: that is the
// relay, which it tells through [Purger] to erase an account's or device's
// queues. TLS, listening and shutdown belong to cmd/sottod.
package keyserver
