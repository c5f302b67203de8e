package policy

import "time"

// MaxCompileWait bounds how long a change of pods waits for the policies
// to be compiled again with it: how late a new pod elsewhere may be
// admitted by a policy that selects it.
const MaxCompileWait = 2 * time.Second

// CompileWait is how long changes of pods (other nodes' pods, or the
// Kubernetes API's) wait before the policies are compiled again with
// them, when the last compile took took and ended since ago: ten times
// took after that end, at most MaxCompileWait. Each compile reads every
// pod in the fabric, and a large fabric's pods change several times a
// second; compiling on each change kept agents busy most of the time at
// 100,000 pods. Paced, compiling costs about a tenth of a core however
// large the fabric, while a change that comes after a quiet spell, and
// any change in a small fabric, is compiled at once.
func CompileWait(took, since time.Duration) time.Duration {
	return max(0, min(10*took, MaxCompileWait)-since)
}
