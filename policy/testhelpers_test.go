package policy

import networkingv1 "k8s.io/api/networking/v1"

type ipBlock = networkingv1.IPBlock
