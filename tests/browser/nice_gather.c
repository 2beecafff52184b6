/*
 * A second real ICE stack for the browser lab: libnice (Debian's libnice-dev) gathers the
 * candidates of one stream through a STUN server, and optionally a TURN relay, and prints them.
 *
 *   nice_gather STUN_IP STUN_PORT [TURN_IP TURN_PORT USER PASSWORD]
 *
 * One line per local candidate on stdout, as libnice writes them into SDP ("a=candidate:..."),
 * then "done" when gathering completed (or "timeout" after 15 s). Exit status 0 on completion.
 * Built by the test: cc nice_gather.c $(pkg-config --cflags --libs nice) -o nice_gather
 */
#include <agent.h>
#include <stdio.h>
#include <stdlib.h>

static GMainLoop *loop;
static gboolean completed = FALSE;

static void gathering_done(NiceAgent *agent, guint stream, gpointer data) {
  (void)agent; (void)stream; (void)data;
  completed = TRUE;
  g_main_loop_quit(loop);
}

static gboolean give_up(gpointer data) {
  (void)data;
  g_main_loop_quit(loop);
  return G_SOURCE_REMOVE;
}

static void received(NiceAgent *agent, guint stream, guint component, guint len, gchar *buf, gpointer data) {
  (void)agent; (void)stream; (void)component; (void)len; (void)buf; (void)data;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 7) {
    fprintf(stderr, "usage: %s STUN_IP STUN_PORT [TURN_IP TURN_PORT USER PASSWORD]\n", argv[0]);
    return 2;
  }
  loop = g_main_loop_new(NULL, FALSE);
  NiceAgent *agent = nice_agent_new(g_main_loop_get_context(loop), NICE_COMPATIBILITY_RFC5245);
  g_object_set(agent, "stun-server", argv[1], "stun-server-port", (guint)atoi(argv[2]), NULL);
  g_object_set(agent, "controlling-mode", TRUE, NULL);
  g_signal_connect(agent, "candidate-gathering-done", G_CALLBACK(gathering_done), NULL);
  guint stream = nice_agent_add_stream(agent, 1);
  if (argc == 7 &&
      !nice_agent_set_relay_info(agent, stream, 1, argv[3], (guint)atoi(argv[4]), argv[5], argv[6],
                                 NICE_RELAY_TYPE_TURN_UDP)) {
    fprintf(stderr, "nice_gather: bad relay info\n");
    return 2;
  }
  nice_agent_attach_recv(agent, stream, 1, g_main_loop_get_context(loop), received, NULL);
  if (!nice_agent_gather_candidates(agent, stream)) {
    fprintf(stderr, "nice_gather: gathering did not start\n");
    return 1;
  }
  g_timeout_add_seconds(15, give_up, NULL);
  g_main_loop_run(loop);
  GSList *candidates = nice_agent_get_local_candidates(agent, stream, 1);
  for (GSList *c = candidates; c != NULL; c = c->next) {
    gchar *line = nice_agent_generate_local_candidate_sdp(agent, c->data);
    printf("%s\n", line);
    g_free(line);
  }
  g_slist_free_full(candidates, (GDestroyNotify)nice_candidate_free);
  printf("%s\n", completed ? "done" : "timeout");
  g_object_unref(agent);
  g_main_loop_unref(loop);
  return completed ? 0 : 1;
}
