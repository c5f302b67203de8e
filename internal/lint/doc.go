// Package lint holds the repository's own rules that go vet does not
// check. They are tests, so `make test` and CI enforce them like any other.
package lint
