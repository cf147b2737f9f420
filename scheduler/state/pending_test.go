package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// TestBufferedWritesReadAsWritten checks that buffering a transaction's
// new containers and usage rows (pending) changes nothing anyone sees: a
// random run of puts, deletes, allocations and reads, in transactions
// that commit or fail, gives the same answers at every step, and leaves
// the same state, as the same run with the buffer written to memdb after
// every operation (which is how writes went before the buffer).
func TestBufferedWritesReadAsWritten(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			buffered, direct := storeWithCIDR(t, "10.9.0.0/26"), storeWithCIDR(t, "10.9.0.0/26")
			for index := uint64(2); index < 40; index++ {
				ops := make([]func(*Txn) string, 1+r.IntN(40))
				for i := range ops {
					ops[i] = randomOp(r)
				}
				fail := r.IntN(5) == 0
				var got, want []string
				run := func(s *Store, answers *[]string, flushEach bool) error {
					return s.Write(index, t0, func(tx *Txn) error {
						for _, op := range ops {
							*answers = append(*answers, op(tx))
							if flushEach {
								tx.p.flush(tx.tx)
							}
						}
						if fail {
							return errors.New("refused")
						}
						return nil
					})
				}
				errB, errD := run(buffered, &got, false), run(direct, &want, true)
				if (errB == nil) != (errD == nil) {
					t.Fatalf("write %d: buffered %v, direct %v", index, errB, errD)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("write %d, operation %d: buffered answered %q, direct %q", index, i, got[i], want[i])
					}
				}
				if g, w := dump(buffered.Snapshot()), dump(direct.Snapshot()); g != w {
					t.Fatalf("after write %d the states differ:\nbuffered: %s\ndirect:   %s", index, g, w)
				}
			}
		})
	}
}

var pendingNodes = []string{"n1", "n2", "n3"}

// randomOp returns one operation on a transaction and what it answered.
func randomOp(r *rand.Rand) func(*Txn) string {
	id := fmt.Sprint("c", r.IntN(12))
	name := fmt.Sprint("name", r.IntN(10))
	node := pendingNodes[r.IntN(len(pendingNodes))]
	ip := netip.AddrFrom4([4]byte{10, 9, 0, byte(2 + r.IntN(12))})
	desired := []DesiredState{DesiredRunning, DesiredStopped}[r.IntN(2)]
	reported := []ReportedState{ReportedPending, ReportedRunning, ReportedLost}[r.IntN(3)]
	cpu := int64(r.IntN(3) * 100)
	// Every choice is drawn now: the operation runs once per store.
	withIP, field, prefix := r.IntN(2) == 0, r.IntN(4), 1+r.IntN(len(id))
	newCtr := func() *Container {
		c := ctr(id, name, node, cpu)
		c.Desired, c.Reported = desired, reported
		return c
	}
	switch r.IntN(12) {
	case 0, 1: // place: allocate an address, then put a new container
		return func(tx *Txn) string {
			a, err := tx.AllocateIP()
			if err != nil {
				return "allocate: " + err.Error()
			}
			c := newCtr()
			c.IP = a
			return "place " + a.String() + ": " + errString(tx.PutContainerOwned(c))
		}
	case 2: // put with an address of its own, or none
		return func(tx *Txn) string {
			c := newCtr()
			if withIP {
				c.IP = ip
			}
			return "put: " + errString(tx.PutContainer(c))
		}
	case 3: // change a container that may have been put in this write
		return func(tx *Txn) string {
			old, ok := tx.ContainerByID(id)
			if !ok {
				return "update: none"
			}
			c := old.Clone()
			switch field {
			case 0:
				c.Name = name
			case 1:
				c.Node = node
			case 2:
				c.IP = ip
			default:
				c.Desired = desired
			}
			return "update: " + errString(tx.PutContainer(c))
		}
	case 4:
		return func(tx *Txn) string { return "delete: " + errString(tx.DeleteContainer(id)) }
	case 5:
		return func(tx *Txn) string { c, _ := tx.ContainerByID(id); return "by ID: " + record(c) }
	case 6:
		return func(tx *Txn) string { c, _ := tx.ContainerByName(name); return "by name: " + record(c) }
	case 7:
		return func(tx *Txn) string {
			c, err := tx.Container(id[:prefix])
			return "ref: " + record(c) + " " + errString(err)
		}
	case 8:
		return func(tx *Txn) string { return "on node: " + records(tx.ContainersOn(node)) }
	case 9:
		return func(tx *Txn) string { return "all: " + records(tx.Containers()) }
	case 10:
		return func(tx *Txn) string {
			return fmt.Sprintf("usage of %s: %+v %d", node, tx.Allocated(node), tx.ContainerCount(node))
		}
	default:
		return func(tx *Txn) string {
			a, err := tx.AllocateIP()
			return "allocate: " + a.String() + " " + errString(err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func record(c *Container) string {
	if c == nil {
		return "none"
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func records(cs []*Container) string {
	var out []string
	for _, c := range cs {
		out = append(out, record(c))
	}
	return "[" + strings.Join(out, ",") + "]"
}

// dump is everything a snapshot says of the containers and the nodes'
// usage, read through memdb's tables (not the snapshot's node view).
func dump(s *Snapshot) string {
	out := records(s.Containers())
	for _, n := range pendingNodes {
		out += fmt.Sprintf(" %s:%+v/%d", n, s.reader.Allocated(n), s.reader.ContainerCount(n))
	}
	for _, table := range replicatedTables {
		out += fmt.Sprintf(" %s@%d", table, s.TableIndex(table))
	}
	for _, ip := range []string{"10.9.0.2", "10.9.0.9"} {
		c, _ := s.first(TableContainers, indexIP, netip.MustParseAddr(ip)).(*Container)
		out += " " + ip + "=" + record(c)
	}
	return out
}

// TestRestoreBuffersContainers checks that a restore, which loads its
// containers through the same buffer, holds all of them, with their
// usage, once committed.
func TestRestoreBuffersContainers(t *testing.T) {
	s := NewStore()
	load := s.Restore()
	const n = 300
	for i := range n {
		c := ctr(fmt.Sprint("c", i), fmt.Sprint("name", i), pendingNodes[i%len(pendingNodes)], 10)
		c.IP = netip.AddrFrom4([4]byte{10, 9, byte(i / 200), byte(2 + i%200)})
		if err := load.Container(c); err != nil {
			t.Fatal(err)
		}
	}
	// A name taken by a container loaded earlier is refused, from the
	// buffer.
	if err := load.Container(ctr("other", "name7", "n1", 10)); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("loading a second container named name7: %v, want ErrNameTaken", err)
	}
	load.Commit()
	snap := s.Snapshot()
	if got := len(snap.Containers()); got != n {
		t.Fatalf("restored %d containers, want %d", got, n)
	}
	if c, ok := snap.ContainerByName("name299"); !ok || c.IP.String() != "10.9.1.101" {
		t.Errorf("name299: %v, want address 10.9.1.101", record(c))
	}
	if got := snap.reader.ContainerCount("n1"); got != n/len(pendingNodes) {
		t.Errorf("n1 holds %d containers, want %d", got, n/len(pendingNodes))
	}
	if got := snap.reader.Allocated("n2"); got.MilliCPU != 10*n/int64(len(pendingNodes)) {
		t.Errorf("n2 has %+v allocated, want %d millicpu", got, 10*n/len(pendingNodes))
	}
}
