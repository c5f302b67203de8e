package overlay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// RunWireGuardDevice is the body of `loomd wireguard-device`: a userspace
// WireGuard device (wireguard-go on a TUN) serving the UAPI on socket. It
// runs in its own process so that pod traffic keeps flowing while loomd
// restarts; the agent configures it over the socket and adopts it after a
// restart. It ends when the TUN device is deleted (loomctl leave, or the
// agent replacing it) or on SIGTERM/SIGINT.
func RunWireGuardDevice(name string, mtu int, socket string) error {
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard-device: "))
	defer dev.Close()
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", socket, err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	defer os.Remove(socket)
	if err := os.Chmod(socket, 0o600); err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		dev.Close()
	}()
	if err := dev.Up(); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	<-dev.Wait()
	l.Close()
	return nil
}
