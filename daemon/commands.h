// commands.h: the `clipcap` tool's subcommands; each takes (argc, argv) with argv[0] the
// subcommand name and returns the process exit status.
#ifndef CLIPCAP_COMMANDS_H
#define CLIPCAP_COMMANDS_H

int cmd_enqueue(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_broker(int argc, char **argv);
int cmd_offsets(int argc, char **argv);
int cmd_consume(int argc, char **argv);
int cmd_status(int argc, char **argv);
// Built from files other parts of the tree provide; weak so the tool still links (and says
// so) when one is not built in.
int cmd_model(int argc, char **argv) __attribute__((weak));
int cmd_caption(int argc, char **argv) __attribute__((weak));

#endif
