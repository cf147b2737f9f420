package state

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestUsableRange(t *testing.T) {
	tests := []struct {
		cidr        string
		first, last string // "" when none
	}{
		{cidr: "10.0.0.0/24", first: "10.0.0.2", last: "10.0.0.254"},
		{cidr: "10.0.0.7/24", first: "10.0.0.2", last: "10.0.0.254"}, // host bits ignored
		{cidr: "10.0.0.0/30", first: "10.0.0.2", last: "10.0.0.2"},
		{cidr: "10.0.0.0/31"},
		{cidr: "10.0.0.0/32"},
		{cidr: "fd00::/120", first: "fd00::2", last: "fd00::ff"}, // no broadcast in IPv6
		{cidr: "fd00::/127"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			first, last, ok := UsableRange(netip.MustParsePrefix(tt.cidr))
			if tt.first == "" {
				if ok {
					t.Fatalf("UsableRange = %s..%s, want none", first, last)
				}
				return
			}
			if !ok || first.String() != tt.first || last.String() != tt.last {
				t.Fatalf("UsableRange = %s..%s (%v), want %s..%s", first, last, ok, tt.first, tt.last)
			}
		})
	}
}

// place allocates an address for a new container and stores it.
func place(tx *Txn, id string) (netip.Addr, error) {
	ip, err := tx.AllocateIP()
	if err != nil {
		return ip, err
	}
	c := ctr(id, "c-"+id, "n1", 1)
	c.IP = ip
	return ip, tx.PutContainer(c)
}

func storeWithCIDR(t *testing.T, cidr string) *Store {
	t.Helper()
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error { return tx.SetConfig(Config{ClusterCIDR: netip.MustParsePrefix(cidr)}) })
	return s
}

func TestAllocateIP(t *testing.T) {
	t.Run("lowest free address, skipping network and gateway", func(t *testing.T) {
		s := storeWithCIDR(t, "10.9.0.0/24")
		var got []string
		write(t, s, 2, func(tx *Txn) error {
			for i := range 3 {
				ip, err := place(tx, fmt.Sprint(i))
				if err != nil {
					return err
				}
				got = append(got, ip.String())
			}
			return nil
		})
		if fmt.Sprint(got) != "[10.9.0.2 10.9.0.3 10.9.0.4]" {
			t.Errorf("allocated %v, want 10.9.0.2, .3, .4", got)
		}
	})

	t.Run("a freed address is reused, lowest first", func(t *testing.T) {
		s := storeWithCIDR(t, "10.9.0.0/24")
		write(t, s, 2, func(tx *Txn) error {
			for i := range 5 {
				if _, err := place(tx, fmt.Sprint(i)); err != nil {
					return err
				}
			}
			return nil
		})
		// Free .5 then .3: the next two allocations take .3 then .5, the
		// third the first never used (.7).
		write(t, s, 3, func(tx *Txn) error {
			if err := tx.DeleteContainer("3"); err != nil {
				return err
			}
			return tx.DeleteContainer("1")
		})
		var got []string
		write(t, s, 4, func(tx *Txn) error {
			for _, id := range []string{"a", "b", "c"} {
				ip, err := place(tx, id)
				if err != nil {
					return err
				}
				got = append(got, ip.String())
			}
			return nil
		})
		if fmt.Sprint(got) != "[10.9.0.3 10.9.0.5 10.9.0.7]" {
			t.Errorf("allocated %v after frees, want 10.9.0.3, .5, .7", got)
		}
	})

	t.Run("full CIDR is an error that says what to do", func(t *testing.T) {
		s := storeWithCIDR(t, "10.9.0.0/29") // .2 to .6: five addresses
		var err error
		_ = s.Write(2, t0, func(tx *Txn) error {
			for i := range 6 {
				if _, err = place(tx, fmt.Sprint(i)); err != nil {
					return nil
				}
			}
			return nil
		})
		if !errors.Is(err, ErrCIDRFull) {
			t.Fatalf("sixth allocation in a /29: %v, want ErrCIDRFull", err)
		}
		if n := len(s.Snapshot().Containers()); n != 5 {
			t.Errorf("%d containers hold addresses, want 5", n)
		}
		// Freeing one makes room again, for that address.
		var ip netip.Addr
		write(t, s, 3, func(tx *Txn) error {
			if err := tx.DeleteContainer("2"); err != nil {
				return err
			}
			var err error
			ip, err = place(tx, "again")
			return err
		})
		if ip.String() != "10.9.0.4" {
			t.Errorf("allocated %s after freeing 10.9.0.4 in a full CIDR, want it", ip)
		}
	})

	t.Run("no CIDR", func(t *testing.T) {
		s := NewStore()
		err := s.Write(1, t0, func(tx *Txn) error { _, err := tx.AllocateIP(); return err })
		if !errors.Is(err, ErrNoClusterCIDR) {
			t.Fatalf("AllocateIP without a CIDR: %v, want ErrNoClusterCIDR", err)
		}
	})

	t.Run("an allocation that was not stored does not skip its address", func(t *testing.T) {
		s := storeWithCIDR(t, "10.9.0.0/24")
		write(t, s, 2, func(tx *Txn) error { _, err := place(tx, "a"); return err })
		write(t, s, 3, func(tx *Txn) error { _, err := tx.AllocateIP(); return err }) // allocated, never used
		_ = s.Write(4, t0, func(tx *Txn) error {                                      // used, then the write failed
			if _, err := place(tx, "b"); err != nil {
				return err
			}
			return errors.New("refused")
		})
		var ip netip.Addr
		write(t, s, 5, func(tx *Txn) error { var err error; ip, err = place(tx, "c"); return err })
		if ip.String() != "10.9.0.3" {
			t.Errorf("allocated %s, want 10.9.0.3 (nothing holds it)", ip)
		}
	})
}

// TestAllocateIPSameAfterReplace checks determinism: a store restored
// from another's records (whose allocation cache starts over) allocates
// the same addresses as the original.
func TestAllocateIPSameAfterReplace(t *testing.T) {
	orig := storeWithCIDR(t, "10.9.0.0/24")
	write(t, orig, 2, func(tx *Txn) error {
		for i := range 20 {
			if _, err := place(tx, fmt.Sprint(i)); err != nil {
				return err
			}
		}
		return nil
	})
	write(t, orig, 3, func(tx *Txn) error {
		for _, id := range []string{"4", "11", "12"} {
			if err := tx.DeleteContainer(id); err != nil {
				return err
			}
		}
		return nil
	})

	copied := NewStore()
	load := copied.Restore()
	snap := orig.Snapshot()
	if err := load.Config(snap.Config()); err != nil {
		t.Fatal(err)
	}
	for _, c := range snap.Containers() {
		if err := load.Container(c); err != nil {
			t.Fatal(err)
		}
	}
	load.Commit()
	restored := NewStore()
	restored.Replace(copied)

	allocate := func(s *Store) string {
		var got []string
		write(t, s, 4, func(tx *Txn) error {
			for _, id := range []string{"x", "y", "z", "w"} {
				ip, err := place(tx, id)
				if err != nil {
					return err
				}
				got = append(got, ip.String())
			}
			return nil
		})
		return fmt.Sprint(got)
	}
	a, b := allocate(orig), allocate(restored)
	if a != b || a != "[10.9.0.6 10.9.0.13 10.9.0.14 10.9.0.22]" {
		t.Errorf("original allocated %s, restored %s; want both [10.9.0.6 10.9.0.13 10.9.0.14 10.9.0.22]", a, b)
	}
}
