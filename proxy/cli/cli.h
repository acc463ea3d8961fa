/* cli: the regslim subcommands. Each takes the arguments after its name
 * (argv[0] is the subcommand) and returns the process exit status:
 * 0 success, 1 failure, 2 usage error. */
#ifndef RS_PROXY_CLI_H
#define RS_PROXY_CLI_H

int cmd_serve(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_optimize(int argc, char **argv);
int cmd_fsck(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

#endif
