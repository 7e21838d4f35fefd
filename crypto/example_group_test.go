package crypto_test

import (
	"fmt"

	"github.com/sotto-im/sotto/crypto"
)

// Example_group shows a group of three devices with sender keys: Alice
// distributes her sender key to Bob and Carol (over their pairwise
// sessions, not shown), then sends one message that both decrypt. When
// Carol leaves, Alice rotates, and Carol cannot read what follows. Only
// []byte crosses between the devices.
func Example_group() {
	group := crypto.GroupID{0x01}
	alice := crypto.NewSenderKey(group)
	dist := alice.Distribution() // sent to each member inside a pairwise session

	bob, carol := crypto.NewGroupReceiver(group), crypto.NewGroupReceiver(group)
	for _, member := range []*crypto.GroupReceiver{bob, carol} {
		if err := member.Process(dist); err != nil {
			panic(err)
		}
	}

	msg, err := alice.Encrypt(crypto.Pad([]byte("hello, group")))
	if err != nil {
		panic(err)
	}
	fmt.Println("bob reads:", string(mustUnpad(bob.Decrypt(msg))))
	fmt.Println("carol reads:", string(mustUnpad(carol.Decrypt(msg))))
	_, err = bob.Decrypt(msg)
	fmt.Println("replay:", err)

	// Carol leaves: Alice rotates and distributes the new key to Bob only.
	alice = alice.Rotate()
	if err := bob.Process(alice.Distribution()); err != nil {
		panic(err)
	}
	msg, _ = alice.Encrypt(crypto.Pad([]byte("carol has left")))
	fmt.Println("bob reads:", string(mustUnpad(bob.Decrypt(msg))))
	_, err = carol.Decrypt(msg)
	fmt.Println("carol:", err)

	// Output:
	// bob reads: hello, group
	// carol reads: hello, group
	// replay: crypto: duplicate message
	// bob reads: carol has left
	// carol: crypto: no sender key for this message
}

func mustUnpad(padded []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	pt, err := crypto.Unpad(padded)
	if err != nil {
		panic(err)
	}
	return pt
}
