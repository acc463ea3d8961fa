/* ops: the operator's endpoints beside the registry API. /metrics renders
 * the Prometheus page of metrics.c; /healthz is answered by the route
 * dispatch in registry.c itself. Answers go out through reply.h. */
#include "api_int.h"

#include "metrics.h"

enum MHD_Result api_serve_metrics(struct request *rq)
{
	char *page = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (metrics_render(&page, &len, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_OTHER, NULL, 0);
	return reply_buffer(rq, 200, "text/plain; version=0.0.4; charset=utf-8", page, len, REPLY_OWNED, NULL, 0);
}
