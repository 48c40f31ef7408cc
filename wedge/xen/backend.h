/*
 * What the frontend's assembly fast paths need from the Xen layer: where
 * the virtual IF lives and which values mean on and off (the shared-info
 * event upcall mask, which Xen itself reads to decide upcalls).  The
 * rewriter takes the same facts from XenBackend.template_context.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include "xen_abi.h"

#define BE_VIF_ADDR (XEN_SHARED_INFO + SHINFO_UPCALL_MASK)
#define BE_VIF_ON 0
#define BE_VIF_OFF 1

#endif
