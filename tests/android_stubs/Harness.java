import android.content.Context;
import android.content.res.AssetManager;
import android.graphics.Bitmap;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Runs a generated class on the JVM and prints what it did as JSON:
 *  java Harness TASK CLASS ASSETS_DIR PIXELS(int32 LE, W*H) W H OUTPUT_FILE[,OUTPUT_FILE...]
 *       [INPUT_NAME OUTPUT_NAME[,OUTPUT_NAME...]]  (the model's signature names, in the order of the files) */
public class Harness {
    public static void main(String[] args) throws Exception {
        String task = args[0];
        java.io.File assets = new java.io.File(args[2]);
        byte[] raw = Files.readAllBytes(Paths.get(args[3]));
        int width = Integer.parseInt(args[4]), height = Integer.parseInt(args[5]);
        int[] pixels = new int[width * height];
        java.nio.ByteBuffer.wrap(raw).order(java.nio.ByteOrder.LITTLE_ENDIAN).asIntBuffer().get(pixels);
        org.tensorflow.lite.Interpreter.nextOutputs = new java.util.ArrayList<>();
        for (String f : args[6].split(",")) org.tensorflow.lite.Interpreter.nextOutputs.add(Files.readAllBytes(Paths.get(f)));
        if (args.length > 8) {
            org.tensorflow.lite.Interpreter.inputNames = java.util.Arrays.asList(args[7]);
            org.tensorflow.lite.Interpreter.outputNames = java.util.Arrays.asList(args[8].split(","));
        }
        Context context = new Context() {
            public AssetManager getAssets() { return new AssetManager(assets); }
        };
        Class<?> cls = Class.forName(args[1]);
        Object model = cls.getConstructor(Context.class, int.class).newInstance(context, 2);
        Bitmap bitmap = new Bitmap(width, height, pixels);
        StringBuilder json = new StringBuilder("{");
        if (task.equals("classification")) {
            Object top = cls.getMethod("classify", Bitmap.class, int.class).invoke(model, bitmap, 3);
            float[] scores = (float[]) cls.getMethod("scores", Bitmap.class).invoke(model, bitmap);
            json.append("\"top\": \"").append(top.toString().replace("\"", "'")).append("\", \"scores\": [");
            for (int i = 0; i < scores.length; i++) json.append(i == 0 ? "" : ", ").append(scores[i]);
            json.append("], ");
        } else if (task.equals("detection")) {
            Object found = cls.getMethod("detect", Bitmap.class, float.class).invoke(model, bitmap, 0.5f);
            json.append("\"detections\": \"").append(found.toString().replace("\"", "'")).append("\", ");
        } else {
            Object seg = cls.getMethod("segment", Bitmap.class).invoke(model, bitmap);
            int[] mask = (int[]) seg.getClass().getMethod("getMask").invoke(seg);
            json.append("\"mask\": [");
            for (int i = 0; i < mask.length; i++) json.append(i == 0 ? "" : ", ").append(mask[i]);
            json.append("], ");
        }
        String used = (String) cls.getMethod("getDelegateUsed").invoke(model);
        ((java.io.Closeable) model).close();
        json.append("\"delegate\": \"" + used + "\", \"model_bytes\": " + org.tensorflow.lite.Interpreter.modelBytes
            + ", \"closed\": " + org.tensorflow.lite.Interpreter.closed + ", \"input\": [");
        byte[] in = org.tensorflow.lite.Interpreter.lastInput;
        for (int i = 0; i < in.length; i++) json.append(i == 0 ? "" : ", ").append(in[i]);
        json.append("]}");
        System.out.println(json);
    }
}
